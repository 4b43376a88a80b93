"""What a model is: its card (MODEL_CARD.json and the IR metadata it writes)."""
