"""New distillation: pick a model, a prompt source and a preset, adjust the knobs, start.

Every field comes from the config dataclasses (``SampleConfig``, ``TrainConfig``,
``ExportConfig``), the same ones the CLI's options are generated from; each is checked by
the config's own ``validate()`` as it is typed."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Collapsible, Footer, Header, Input, Label, \
    Select, Static

from ...config import PRESETS, ExportConfig, SampleConfig, TrainConfig, detect_preset
from ...app.inventory import Hardware, list_models
from ...app.memory_form import form_device, preview
from ...app.pipeline import ORDER
from ..forms import ConfigForm, build_config
from ..jobs import distill_job
from ..messages import StartJob

# The knobs that matter most for SSD, shown first; the rest sit under "more options".
SAMPLE_KEYS = ("prompts", "limit", "preset", "temperature", "top_k", "top_p",
               "samples_per_prompt", "max_new_tokens")
TRAIN_KEYS = ("lora_rank", "lr", "max_steps")


class DistillScreen(Screen[None]):
    BINDINGS = [Binding("ctrl+s", "start", "Start", priority=True),
                Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, model: str | None = None, hardware: Hardware | None = None):
        super().__init__()
        self.initial_model = model
        self.hardware = hardware  # the memory estimate's budget (None: not detected yet)

    def compose(self) -> ComposeResult:
        models = list_models()
        model = self.initial_model or (models[0].ref if models else "")
        yield Header()
        with VerticalScroll(id="form"):
            yield Static("Model", classes="section")
            with Horizontal(classes="field-line"):
                yield Label("model", classes="field-label")
                yield Select([(m.ref, m.ref) for m in models], id="model-pick",
                             prompt="pick a model on this machine", compact=True)
                yield Input(model, id="model", placeholder="smollm2-135m, a .gguf, an HF "
                            "folder or a hub id such as Qwen/Qwen3-4B-Instruct-2507", compact=True)
            with Horizontal(classes="field-line"):
                yield Label("run name", classes="field-label")
                yield Input("", id="run-name", placeholder="default: the model's name",
                            compact=True)
                yield Label("stop after", classes="field-label")
                yield Select([(s, s) for s in ORDER], id="stop-after", value="export",
                             allow_blank=False, compact=True)
            yield Static("", id="preset-note", classes="field-help")
            yield Static("Sampling: the model answers its prompts at T_train", classes="section")
            yield ConfigForm(SampleConfig, "sample-", only=SAMPLE_KEYS)
            yield Static("Training: LoRA on its own answers", classes="section")
            yield ConfigForm(TrainConfig, "train-", only=TRAIN_KEYS)
            yield Static("", id="memory-note", classes="field-help")
            yield Static("Export: GGUF for llama.cpp", classes="section")
            yield ConfigForm(ExportConfig, "export-")
            with Collapsible(title="More sampling options", collapsed=True):
                yield ConfigForm(SampleConfig, "sample-", skip=SAMPLE_KEYS)
            with Collapsible(title="More training options", collapsed=True):
                yield ConfigForm(TrainConfig, "train-", skip=TRAIN_KEYS)
            with Horizontal(id="form-actions"):
                yield Button("Start distillation (ctrl+s)", id="start", variant="primary")
                yield Static("", id="form-status")
        yield Footer()

    def on_mount(self) -> None:
        self.validate_all()

    @property
    def model_ref(self) -> str:
        return self.query_one("#model", Input).value.strip()

    def validate_all(self) -> bool:
        built = {cls: build_config(self, cls)[0]
                 for cls in (SampleConfig, TrainConfig, ExportConfig)}
        ok = all(c is not None for c in built.values()) and bool(self.model_ref)
        self.show_memory(built[SampleConfig], built[TrainConfig])
        self.query_one("#start", Button).disabled = not ok
        self.query_one("#form-status", Static).update(
            "" if ok else "[red]fix the fields marked in red[/]" if self.model_ref
            else "[red]name a model[/]")
        self.show_preset()
        return ok

    def show_memory(self, sample: SampleConfig | None, train: TrainConfig | None) -> None:
        """The core's memory estimate for these knobs on this machine: what training would
        choose (micro-batch, checkpointing), or why it would refuse."""
        note = self.query_one("#memory-note", Static)
        if not self.model_ref or sample is None or train is None:
            note.update("memory: name a model and fix the fields to see the estimate")
            return
        note.update(Text(preview(self.model_ref, train, sample.max_new_tokens,
                                 form_device(self.hardware))))

    def show_preset(self) -> None:
        """The preset that applies and its T_train/top-k/top-p, as the empty fields'
        placeholders: what the run will use unless a field overrides it."""
        chosen = self.query_one("#sample-preset", Select).value
        name = chosen if isinstance(chosen, str) else detect_preset(
            Path(self.model_ref).name or self.model_ref)
        p = PRESETS[name]
        for field, value in (("temperature", p.train.temperature), ("top_k", p.train.top_k),
                             ("top_p", p.train.top_p)):
            self.query_one(f"#sample-{field}", Input).placeholder = f"preset: {value:g}"
        how = "chosen" if isinstance(chosen, str) else "from the model name"
        self.query_one("#preset-note", Static).update(
            f"preset [b]{name}[/] ({how}; {p.description}): T_train {p.train.describe()}, "
            f"then T_eval {p.eval.describe()}")

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        if event.control.id == "model-pick":
            value = cast(Select[str], event.control).value
            if isinstance(value, str):
                self.query_one("#model", Input).value = value
            return
        self.validate_all()

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if not self.validate_all():
            self.notify("some fields need fixing first", severity="warning")
            return
        sample_cfg, _ = build_config(self, SampleConfig)
        train_cfg, _ = build_config(self, TrainConfig)
        export_cfg, _ = build_config(self, ExportConfig)
        run = self.query_one("#run-name", Input).value.strip() or None
        stop = cast(str, self.query_one("#stop-after", Select).value)
        self.post_message(StartJob(distill_job(self.model_ref, sample_cfg, train_cfg,
                                               export_cfg, run,
                                               None if stop == "export" else stop)))
