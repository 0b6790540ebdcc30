from robustcompress.cli import main

main()
