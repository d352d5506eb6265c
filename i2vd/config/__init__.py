"""The configuration, declared once (model), loaded (load), documented (reference), and what each image
gets from it: sidecars, profiles, prompt templates, ComfyUI workflow files."""
