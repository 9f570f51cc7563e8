"""Files on disk: atomic writes, JSON and safetensors without pickle, safe path names."""
