"""Dataset registration (COCO panoptic, Mapillary Vistas, custom, synthetic)."""
