"""Answer variants: named, versioned answer pipelines that share traffic by weight."""
