"""Training entry points: teacher labels, distillation, projectors."""
