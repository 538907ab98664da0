"""txrig: the Reactive Interaction Gateway on Twisted."""
