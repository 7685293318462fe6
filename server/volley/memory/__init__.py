"""Host and device memory: what the process holds, and giving freed memory back."""
