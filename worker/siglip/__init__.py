"""SigLIP fine-tuning with LoRA / QLoRA: model loading, losses, retrieval metrics, the Lightning pieces,
and the `train` stage. Import the submodules directly; this package import stays cheap."""
