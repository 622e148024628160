"""The TUI's screens: home, the distillation form, the run dashboard, the samples browser,
evaluations, the lens and the serve panel."""
