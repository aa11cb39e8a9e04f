"""Image-level helpers every stage shares: intensity windowing, the one resizing module, lung fields and cues."""
