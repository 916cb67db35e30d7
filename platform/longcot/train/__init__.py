"""Distributed SFT and LoRA of the student on Ray Train (transformers Trainer, PEFT, DeepSpeed)."""
