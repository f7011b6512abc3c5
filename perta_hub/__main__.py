"""``python -m perta_hub`` runs the CLI (this is what ``accelerate launch -m perta_hub`` uses)."""

from perta_hub.cli import main

if __name__ == "__main__":
    main()
