"""The fine-tuned model on new images (the `predict` stage): PNG, JPEG and DICOM files in, a generated
impression and the most similar training reports out. Import the submodules directly."""
