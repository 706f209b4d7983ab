"""Source material, figure 5: layer 2, feature 9 (0-based) projected for a variety of
training images, each image beside its projection.

    python experiments/fig05_layer2_feature9.py [--data D] [--model M] [--out O]
"""

from fig02_layer1_feature7 import feature_command

NAME = "fig05_layer2_feature9"

__all__ = ["main"]

main = feature_command(
    2, 9, NAME, "Layer 2, feature 9 (0-based) for a variety of images (source figure 5)."
)


if __name__ == "__main__":
    main()
