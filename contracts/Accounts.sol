// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Accounts, the devnet faucet, transfers, provider registration and stake (contracts/accounts.py).
library Accounts {
    /// Bind the sender's Ethereum address to the Cloister account of ``signingKey``. ``binding`` is the
    /// Ed25519 signature of that key over the binding (see cloister/ledger/evm/keys.py): the EVM cannot check
    /// Ed25519, so every reader does.
    function registerAccount(State storage s, uint64 nonce,
        bytes32 signingKey,
        bytes32 sealingKey,
        string calldata name,
        bytes calldata binding
    ) external {
        bytes20 cl = bytes20(sha256(abi.encodePacked("cloister/address/v1", bytes1(0), signingKey)));
        Account storage account = s.accounts[cl];
        if (account.eth != address(0)) {
            if (nonce != account.nonce + 1) revert NonceMismatch(account.nonce + 1, nonce);
            revert AccountExists(cl);
        }
        if (nonce != 1) revert NonceMismatch(1, nonce);
        if (s.accountOf[msg.sender] != bytes20(0)) revert EthAddressTaken(msg.sender);
        Base.text(name, MAX_NAME, false, "name");
        if (binding.length != 64) revert BadField("binding");
        account.eth = msg.sender;
        account.nonce = 1;
        account.signingKey = signingKey;
        account.sealingKey = sealingKey;
        account.name = name;
        account.binding = binding;
        s.accountOf[msg.sender] = cl;
        emit AccountRegistered(Base.seq(s), cl, name);
    }

    function faucetDrip(State storage s, uint64 nonce, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        uint64 limit = s.params.faucetLimit;
        if (limit == 0) revert FaucetDisabled();
        if (amount > limit) revert FaucetLimit(limit);
        Base.credit(s, sender, amount);
        emit FaucetDripped(Base.seq(s), sender, amount);
    }

    function transfer(State storage s, uint64 nonce, bytes20 to, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        Base.account(s, to);
        Base.debit(s, sender, amount, FOR_TRANSFER);
        Base.credit(s, to, amount);
        emit Transferred(Base.seq(s), sender, to, amount);
    }

    function registerProvider(State storage s, uint64 nonce, string calldata name, string calldata description) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(name, MAX_NAME, false, "name");
        Base.text(description, MAX_TEXT, true, "description");
        Provider storage provider = s.providers[sender];
        if (provider.exists) revert ProviderExists(sender);
        provider.exists = true;
        provider.name = name;
        provider.description = description;
        emit ProviderRegistered(Base.seq(s), sender, name);
    }

    function depositStake(State storage s, uint64 nonce, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        Account storage account = Base.debit(s, sender, amount, FOR_STAKE);
        account.stake += amount;
        emit StakeDeposited(Base.seq(s), sender, amount, account.stake);
    }

    function withdrawStake(State storage s, uint64 nonce, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        Account storage account = s.accounts[sender];
        if (account.stake < amount) revert StakeTooLow(sender, amount, account.stake);
        uint64 floor = s.params.minServingStake;
        if (account.stake - amount < floor) {
            bytes8[] memory serving = _serving(s, sender);
            if (serving.length > 0) revert StakeServing(sender, account.stake, floor, serving);
        }
        account.stake -= amount;
        Base.credit(s, sender, amount);
        emit StakeWithdrawn(Base.seq(s), sender, amount, account.stake);
    }

    /// The open deployments some machine of ``provider`` is assigned to: its stake is what a liar loses there.
    function _serving(State storage s, bytes20 provider) private view returns (bytes8[] memory found) {
        found = new bytes8[](s.orderIds.length);
        uint256 count;
        for (uint256 i = 0; i < s.orderIds.length; i++) {
            Order storage order = s.orders[s.orderIds[i]];
            if (order.kind != OrderKind.Inference || order.state > OrderState.Running) continue;
            for (uint256 j = 0; j < order.machines.length; j++) {
                if (s.machines[order.machines[j]].provider == provider) {
                    found[count++] = order.id;
                    break;
                }
            }
        }
        assembly {
            mstore(found, count)
        }
    }
}
