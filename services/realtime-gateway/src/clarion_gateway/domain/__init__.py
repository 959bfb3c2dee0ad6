"""Pure gateway logic: history entries from contracts, presence debouncing, delivery status."""
