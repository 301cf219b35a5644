from gnosync.cli import main

main()
