"""Ways in besides the flags: the interactive prompt, the dry run, and the hardware profiles."""
