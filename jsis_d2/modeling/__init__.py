"""JSIS-Net model parts: meta-architecture (JSISNet) and semantic head (PPMHead)."""
