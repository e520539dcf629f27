"""tpp.ops: composite operators, each ONE JIT-compiled function on the composition
layer (tpp.compose) whose loop bodies inline primitives."""
from .attention import attention
from .bert import BertLayer, bert_layer
from .bias_act import bias_act
from .conv_api import Conv2d, conv2d
from .dropout import dropout
from .layout import Blocked, from_blocked, to_blocked
from .matmul import MatmulPlan, matmul
from .packed import PackedB, pack_b
from .norm_backward import layer_norm_backward
from .norms import layer_norm, log_softmax, rms_norm, softmax
from .segment import segment_sum

__all__ = ["attention", "BertLayer", "bert_layer", "bias_act", "Blocked", "Conv2d", "conv2d", "dropout",
           "from_blocked", "to_blocked", "layer_norm",
           "layer_norm_backward", "log_softmax", "matmul", "MatmulPlan", "PackedB", "pack_b", "rms_norm",
           "segment_sum", "softmax"]
