"""berth-modeld: the model runner (OCI model store, inference engines, OpenAI API)."""
