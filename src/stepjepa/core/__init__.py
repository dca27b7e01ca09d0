"""The engine, pure functions over plain tensors and lists: reasoning steps, tokenized views, the packed row layout and
its attention rule, the objective (LM plus JEPA losses) and the multi-pass reference; also the one error type for
wrong input (``core.errors.UsageError``), which every layer above raises. Imports nothing else of stepjepa."""
