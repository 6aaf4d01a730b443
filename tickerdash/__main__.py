from tickerdash.cli import main

main()
