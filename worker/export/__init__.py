"""The Hugging Face output of a run: PEFT adapter folders, the projector, a model card and the run config,
that load with plain ``peft`` + ``transformers``; the `export` stage writes it from a checkpoint (optionally
with a merged SigLIP) and can push it to the Hub. Import the submodules directly."""
