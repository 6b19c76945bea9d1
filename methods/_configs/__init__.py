"""Config fragments shared by several methods' configs (used through mmengine `_base_`)."""
