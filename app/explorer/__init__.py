"""The app's helpers: state (session + store), caches, figures, tables, job panels. Pages stay thin."""
