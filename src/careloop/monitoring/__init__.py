"""Remote monitoring: wearable and home-device streams judged against each person's baseline."""
