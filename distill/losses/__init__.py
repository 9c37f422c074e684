"""Pure loss functions of stage two (docs/method.md): one small module per loss, each with
its paper, equation and tensor shapes."""

from amid.distill.losses.adversarial import (
    adversarial_loss,
    alignment_means,
    alignment_stats,
    discriminator_loss,
    enhanced_mask,
    update_dynamic_weights,
)
from amid.distill.losses.crcd import crcd_loss
from amid.distill.losses.crd import CRDLoss
from amid.distill.losses.jsd import jsd_loss
from amid.distill.losses.kd import kd_loss
from amid.distill.losses.kl import symmetric_kl_loss
from amid.distill.losses.mi import MI_VARIANTS, class_aware_mi_loss, symmetric_mi_loss
from amid.distill.losses.ntxent import ntxent_loss

__all__ = [
    "MI_VARIANTS", "CRDLoss", "adversarial_loss", "alignment_means", "alignment_stats",
    "class_aware_mi_loss", "crcd_loss", "discriminator_loss", "enhanced_mask", "jsd_loss",
    "kd_loss", "ntxent_loss", "symmetric_kl_loss", "symmetric_mi_loss", "update_dynamic_weights",
]
