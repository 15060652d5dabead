"""Adaptive average pooling, as torch.nn.AdaptiveAvgPool2d: a fixed output size whatever the
input's, output row oh averaging input rows [floor(oh*H/OH), ceil((oh+1)*H/OH)). With
output_size=1 it is global average pooling."""
from .. import checks, functional as F
from ..backends import ops_for
from .module import Module


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        F.adaptive_pool_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size
        self._x_shape = None

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, self.output_size, layer="AdaptiveAvgPool2d")
        self._x_shape, self._y_shape, self._y_dtype = x.shape, y.shape, y.dtype
        return y

    def backward(self, dy):
        x_shape = self.saved("_x_shape")
        checks.gradient("AdaptiveAvgPool2d", dy, self._y_shape, self._y_dtype)
        if len(x_shape) == 3:  # unbatched
            return ops_for(dy).adaptive_avg_pool2d_backward(dy[None], (1,) + x_shape)[0]
        return ops_for(dy).adaptive_avg_pool2d_backward(dy, x_shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"
