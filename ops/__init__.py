"""tpp.ops: composite operators, each ONE JIT-compiled function on the composition
layer (tpp.compose) whose loop bodies inline primitives."""
from .attention import attention
from .bert import BertLayer, bert_layer
from .bias_act import bias_act
from .conv_api import Conv2d, conv2d
from .conv_backward import conv2d_backward
from .depthwise import Depthwise, depthwise_conv2d
from .dropout import dropout
from .layout import Blocked, from_blocked, to_blocked
from .matmul import MatmulPlan, matmul
from .packed import PackedB, pack_b
from .norm_backward import layer_norm_backward
from .norms import layer_norm, log_softmax, rms_norm, softmax
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d
from .segment import segment_sum
from .spmm import spmm

__all__ = ["attention", "avg_pool2d", "BertLayer", "bert_layer", "bias_act", "Blocked", "Conv2d", "conv2d",
           "conv2d_backward", "Depthwise", "depthwise_conv2d", "dropout", "from_blocked", "global_avg_pool2d",
           "layer_norm", "layer_norm_backward", "log_softmax", "matmul", "MatmulPlan", "max_pool2d", "PackedB",
           "pack_b", "rms_norm", "segment_sum", "softmax", "spmm", "to_blocked"]
