"""Keys under which a quantized model records how it was made (ONNX metadata_props, JSON or text)."""

# The nodes left in float and why: [{"name", "op_type", "reason"}].
FLOAT_NODES_KEY = "eightbit.float_nodes"
SCHEME_KEY = "eightbit.scheme"
# How the weight range (and other measured choices) was decided, in words: every decision's full text.
WEIGHT_RANGE_KEY = "eightbit.weight_range"
# The same decisions in short: [{"step", "taken"}], in the order made (the quantize report's lines).
DECISIONS_KEY = "eightbit.decisions"
# The bias width and, per node, how many bias values it clipped.
BIAS_KEY = "eightbit.bias"
# What --min-sqnr or --max-drop did: the budget, the measure before and after, the nodes kept float,
# the latency cost.
FALLBACK_KEY = "eightbit.fallback"
# Bias correction (eq. 7b): node name -> how far each of its bias codes moved.
BIAS_CORRECTION_KEY = "eightbit.bias_correction"
# Cross-layer equalization (eq. 35): tensor name -> the factors its channels (axis 1) were multiplied by.
EQUALIZATION_KEY = "eightbit.equalization"
# The speed check: the nodes slower in int8 than in float here, the model's latency with them integer and
# float, and whether they were kept float.
SPEED_CHECK_KEY = "eightbit.speed_check"
# The runtime the model was made for (--target; static schemes): "ort" or "openvino".
TARGET_KEY = "eightbit.target"
# Fine-tuning against the float model (eightbit finetune): steps, samples, held-out output SQNR before and
# after, whether the result was kept.
FINETUNE_KEY = "eightbit.finetune"
