"""What a person looks at after a run: the pictures of a run (matplotlib), its self-contained HTML report,
and the comparison of several runs or a sweep. Reads run dirs; imports neither torch nor Lightning."""
