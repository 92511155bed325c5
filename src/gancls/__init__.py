"""gancls: GAN-CLS text-to-image synthesis on CUB-200-2011, as a DVC + Prefect pipeline."""

import os

# Telemetry off for every entry point that imports the package (DVC, Prefect, Great Expectations,
# Gradio and the Hugging Face hub it imports).
for _var, _value in (
    ("DVC_NO_ANALYTICS", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("GX_ANALYTICS_ENABLED", "false"),
    ("GRADIO_ANALYTICS_ENABLED", "False"),
    ("HF_HUB_DISABLE_TELEMETRY", "1"),
):
    os.environ.setdefault(_var, _value)

__version__ = "0.1.0"
