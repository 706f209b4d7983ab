"""Source material, figure 4: the same dog and the projections of all 64 features
of layer 2.

    python experiments/fig04_dog_layer2.py [--data D] [--model M] [--out O]
"""

from fig01_dog_layer1 import dog_command

NAME = "fig04_dog_layer2"

__all__ = ["main"]

main = dog_command(
    2, NAME, "The dog and the projections of all 64 features of layer 2 (source figure 4)."
)


if __name__ == "__main__":
    main()
