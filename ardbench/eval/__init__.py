"""The evaluator: clean, FGSM, PGD-20, CW-inf and AutoAttack columns; compliance; model_info."""
