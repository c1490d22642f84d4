"""slip_hf: structure-aware language-image pretraining (SLIP) on the Hugging Face stack."""

from transformers import AutoConfig, AutoModel

from .configuration_slip import SlipConfig
from .modeling_slip import SlipModel, SlipOutput, SlipPreTrainedModel

AutoConfig.register(SlipConfig.model_type, SlipConfig, exist_ok=True)
AutoModel.register(SlipConfig, SlipModel, exist_ok=True)

__version__ = "0.5.0"

__all__ = ["SlipConfig", "SlipModel", "SlipOutput", "SlipPreTrainedModel", "__version__"]
