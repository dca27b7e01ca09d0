"""The engine, pure functions over plain tensors and lists: reasoning steps, tokenized views, the packed row layout and
its attention rule, the objective (LM plus JEPA losses) and the multi-pass reference. Imports nothing else of stepjepa."""
