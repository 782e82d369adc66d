"""The preprocess actor: image bytes → the model's input tensor (logic in ``imaging.py``).

Decoding and resizing are CPU-bound, so the handler is a plain function: the runtime runs it in
a thread pool (Pillow and numpy release the GIL), letting one instance serve requests in parallel.
"""

from imaging import convert

from mlcloud.interfaces import PREPROCESS, PreprocessRequest, Tensor
from mlcloud.metrics import PREPROCESS as STAGE, STAGE_DURATION
from mlcloud.sdk import Actor, Context

component = Actor()


@component.operation(PREPROCESS)
def preprocess(ctx: Context, request: PreprocessRequest) -> Tensor:
    with STAGE_DURATION.labels(STAGE, request.model).time():
        return convert(request, max_pixels=ctx.settings.max_image_pixels)
