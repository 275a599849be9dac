"""The browser studio: one module per tab, each with `build(ctx)`; handlers are thin calls into core."""
