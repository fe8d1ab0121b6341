"""Converters from other formats (CTranslate2 Whisper, llama.cpp GGUF) into offline transformers directories."""
