"""ComfyUI adapters: the only code in the pack that imports comfy.*, folder_paths or server."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
