"""Stage 1, weak supervision: slice labels -> CAM classifier -> fused CAMs -> pseudo masks. Never imports seg/."""
