"""ComfyUI adapters: the only code in the pack that imports comfy.*, folder_paths or server.

Node ids (the keys below), input names, types and order are a public contract: saved workflows
must keep loading. Add inputs at the end with defaults that keep old behaviour; retire nodes as
deprecated, never delete them (see CHANGELOG.md).
"""

from . import adapter
from .loaders import ImagenVideoModelLoader, ImagenVideoTextEncode, ImagenVideoTextEncoderLoader
from .phenaki import ImagenVideoPhenakiLoader, ImagenVideoPhenakiSampler, ImagenVideoPhenakiStory
from .sampling import ImagenVideoCosineScheduler, ImagenVideoSamplerSelect, ImagenVideoScheduler
from .stages import ImagenVideoDistilledSampler, ImagenVideoSampler, ImagenVideoSpatialSR, ImagenVideoTemporalSR
from .story import ImagenVideoStory, ImagenVideoStoryToVideo

adapter.register_folders()

NODE_CLASS_MAPPINGS = {
    "ImagenVideoModelLoader": ImagenVideoModelLoader,
    "ImagenVideoTextEncoderLoader": ImagenVideoTextEncoderLoader,
    "ImagenVideoTextEncode": ImagenVideoTextEncode,
    "ImagenVideoSampler": ImagenVideoSampler,
    "ImagenVideoSpatialSR": ImagenVideoSpatialSR,
    "ImagenVideoTemporalSR": ImagenVideoTemporalSR,
    "ImagenVideoDistilledSampler": ImagenVideoDistilledSampler,
    "ImagenVideoStory": ImagenVideoStory,
    "ImagenVideoStoryToVideo": ImagenVideoStoryToVideo,
    "ImagenVideoSamplerSelect": ImagenVideoSamplerSelect,
    "ImagenVideoScheduler": ImagenVideoScheduler,
    "ImagenVideoCosineScheduler": ImagenVideoCosineScheduler,
    "ImagenVideoPhenakiLoader": ImagenVideoPhenakiLoader,
    "ImagenVideoPhenakiSampler": ImagenVideoPhenakiSampler,
    "ImagenVideoPhenakiStory": ImagenVideoPhenakiStory,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ImagenVideoModelLoader": "Load Imagen Video Stage (IV)",
    "ImagenVideoTextEncoderLoader": "Load Imagen Video Text Encoder (IV)",
    "ImagenVideoTextEncode": "Imagen Video Text Encode (IV)",
    "ImagenVideoSampler": "Imagen Video Base Sampler (IV)",
    "ImagenVideoSpatialSR": "Imagen Video Spatial Super-Resolution (IV)",
    "ImagenVideoTemporalSR": "Imagen Video Temporal Super-Resolution (IV)",
    "ImagenVideoDistilledSampler": "Imagen Video Distilled Sampler (IV)",
    "ImagenVideoStory": "Imagen Video Story (IV)",
    "ImagenVideoStoryToVideo": "Imagen Video Story to Video, streamed (IV)",
    "ImagenVideoSamplerSelect": "Imagen Video Sampler Select (IV)",
    "ImagenVideoScheduler": "Imagen Video Stage Scheduler (IV)",
    "ImagenVideoCosineScheduler": "Truncated Cosine Scheduler (IV)",
    "ImagenVideoPhenakiLoader": "Load Phenaki (IV)",
    "ImagenVideoPhenakiSampler": "Phenaki Text to Video (IV)",
    "ImagenVideoPhenakiStory": "Phenaki Story (IV)",
}
