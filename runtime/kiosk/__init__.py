"""`gen kiosk`: scenes rendered ahead by a producer thread, shown in a window or served to a browser."""
