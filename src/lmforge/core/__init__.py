"""The layer every other one stands on: the config schema, one-line user errors, atomic
outputs, interrupts, the import guard and the stages' shared front door (``cli``)."""
