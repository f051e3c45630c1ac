"""The handoff gateway: puts agents in line between the customers' chat widget and Rasa."""
