"""Networks over more than one modality (text and images)."""
