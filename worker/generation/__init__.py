"""Report generation: frozen fine-tuned SigLIP vision features -> projector -> BioGPT, its Lightning
training (`train-full`), evaluation with text metrics (`evaluate`) and the qualitative page
(`qualitative`). Import the submodules directly; this package import stays cheap."""
