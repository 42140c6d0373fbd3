"""Imagen Video cascade for ComfyUI: the pack's entry point.

ComfyUI imports this package and reads NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS and
WEB_DIRECTORY. Nothing heavy happens at import time: models load when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
