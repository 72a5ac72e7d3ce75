"""Chat models: the Ollama client and the in-process GGUF model, behind one interface."""
