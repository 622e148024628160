"""The product's core. Imports no UI (textual, rich) and no engine (torch, mlx, llama_cpp)
at module load: engines are imported inside the functions that need them."""
