"""GAN Influence Explorer engine: ASGD-Influence for GANs (Terashita et al., ICLR 2021)."""

__version__ = "0.1.0"
