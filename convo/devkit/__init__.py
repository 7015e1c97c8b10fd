"""What developers and the demo run instead of the real world: the Fineract simulator, fake gateways,
conversation tests."""
