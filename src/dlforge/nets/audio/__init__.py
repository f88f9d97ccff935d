"""Speech networks: log-mel features computed inside the net, keyword spotting and CTC recognition."""
