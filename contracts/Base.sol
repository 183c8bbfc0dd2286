// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./CloisterTypes.sol";

/// The helpers every area shares: the envelope (sender and nonce), lookups, balances and field checks.
library Base {
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// The sender's account after checking and consuming its nonce (a revert undoes the increment).
    function begin(State storage s, uint64 nonce) internal returns (bytes20 sender) {
        sender = s.accountOf[msg.sender];
        if (sender == bytes20(0)) revert SenderNotRegistered(msg.sender);
        Account storage account = s.accounts[sender];
        if (nonce != account.nonce + 1) revert NonceMismatch(account.nonce + 1, nonce);
        account.nonce = nonce;
    }

    function time() internal view returns (uint64) {
        return uint64(block.timestamp);
    }

    function seq(State storage s) internal returns (uint64) {
        return ++s.eventCount;
    }

    function account(State storage s, bytes20 cl) internal view returns (Account storage found) {
        found = s.accounts[cl];
        if (found.eth == address(0)) revert AccountNotFound(cl);
    }

    function credit(State storage s, bytes20 cl, uint256 amount) internal {
        Account storage found = account(s, cl);
        if (found.balance + amount > MAX_AMOUNT) revert BalanceOverflow(cl, amount);
        found.balance += uint64(amount);
    }

    function debit(State storage s, bytes20 cl, uint256 amount, uint8 purpose) internal returns (Account storage found) {
        found = account(s, cl);
        if (found.balance < amount) revert BalanceTooLow(purpose, cl, amount, found.balance);
        found.balance -= uint64(amount);
    }

    function machine(State storage s, bytes8 id) internal view returns (Machine storage found) {
        found = s.machines[id];
        if (found.provider == bytes20(0)) revert MachineNotFound(id);
    }

    function offer(State storage s, bytes8 id) internal view returns (Offer storage found) {
        found = s.offers[id];
        if (found.owner == bytes20(0)) revert OfferNotFound(id);
    }

    function order(State storage s, bytes8 id) internal view returns (Order storage found) {
        found = s.orders[id];
        if (found.owner == bytes20(0)) revert OrderNotFound(id);
    }

    /// The machine, if the sender is its provider; only providers act for their machines.
    function providedMachine(State storage s, bytes8 id, bytes20 sender) internal view returns (Machine storage found) {
        found = machine(s, id);
        if (found.provider != sender) revert NotMachineProvider(id, found.provider);
    }

    function activeMachine(State storage s, bytes8 id, bytes20 sender) internal view returns (Machine storage found) {
        found = providedMachine(s, id, sender);
        if (!found.active) revert MachineRetired(id);
    }

    /// The order, if it is of ``kind``: deployments and fine-tunes take different transactions.
    function orderOfKind(State storage s, bytes8 id, OrderKind kind) internal view returns (Order storage found) {
        found = order(s, id);
        if (found.kind != kind) revert WrongOrderKind(id, found.kind);
    }

    /// The deployment, if the sender is its gateway: only the gateway settles usage and reports replicas.
    function gatewayOrder(State storage s, bytes8 id, bytes20 sender) internal view returns (Order storage found) {
        found = orderOfKind(s, id, OrderKind.Inference);
        if (found.gateway != sender) revert NotGateway(id, found.gateway);
    }

    /// Whether the machine holds (or held) a seat on the order: assigned to it now or before.
    function hasSeat(State storage s, bytes8 orderId, bytes8 machineId) internal view returns (bool) {
        return s.checkpointSlot[keccak256(abi.encode(orderId, machineId))] != 0;
    }

    /// The (order, machine) checkpoint, appended empty (machine id zero) if there is none yet.
    function slot(State storage s, bytes8 orderId, bytes8 machineId) internal returns (Checkpoint storage) {
        bytes32 key = keccak256(abi.encode(orderId, machineId));
        Checkpoint[] storage all = s.checkpoints[orderId];
        if (s.checkpointSlot[key] == 0) {
            all.push();
            s.checkpointSlot[key] = all.length;
        }
        return all[s.checkpointSlot[key] - 1];
    }

    /// The offers whose content the order reads, in the order the contract reads them: model, datasets…,
    /// adapters…, engine.
    function contentOffers(Order storage found) internal view returns (bytes8[] memory content) {
        uint256 datasets = found.datasetOffers.length;
        uint256 adapters = found.adapterOffers.length;
        content = new bytes8[](datasets + adapters + 2);
        content[0] = found.modelOffer;
        for (uint256 i = 0; i < datasets; i++) {
            content[1 + i] = found.datasetOffers[i];
        }
        for (uint256 i = 0; i < adapters; i++) {
            content[1 + datasets + i] = found.adapterOffers[i];
        }
        content[content.length - 1] = found.engineOffer;
    }

    /// Revert unless the network's attestation registrar made the 65-byte signature (r, s, v) of ``digest``.
    function registrarSigned(State storage s, bytes32 digest, bytes calldata signature) internal view {
        if (signature.length != 65) revert RegistrarSignatureInvalid();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s_ = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s_) > HALF_ORDER || (v != 27 && v != 28)) revert RegistrarSignatureInvalid();
        address signer = ecrecover(digest, v, r, s_);
        if (signer == address(0) || signer != s.registrar) revert RegistrarSignatureInvalid();
    }

    /// Id of the record a transaction creates: the first 8 bytes of its Cloister transaction hash.
    function newId(bytes32 txHash) internal pure returns (bytes8) {
        return bytes8(txHash);
    }

    // --- field checks: what cloister.ledger.records.Fields enforces, so every stored record reads back -------

    function amount(uint64 value, string memory field) internal pure {
        if (value == 0 || value > MAX_AMOUNT) revert BadField(field);
    }

    /// Well-formed UTF-8 of 1 (0 if ``empty``) to ``maxChars`` characters.
    function text(string memory value, uint256 maxChars, bool empty, string memory field) internal pure {
        bytes memory raw = bytes(value);
        uint256 chars;
        uint256 i;
        while (i < raw.length) {
            uint256 size = _sequence(raw, i);
            if (size == 0) revert BadField(field);
            i += size;
            chars++;
        }
        if (chars > maxChars || (!empty && chars == 0)) revert BadField(field);
    }

    /// Length of the well-formed UTF-8 sequence at ``i``, or 0 if it is not one.
    function _sequence(bytes memory raw, uint256 i) private pure returns (uint256 size) {
        uint8 lead = uint8(raw[i]);
        if (lead < 0x80) return 1;
        size = lead >= 0xC2 && lead < 0xE0 ? 2 : lead >= 0xE0 && lead < 0xF0 ? 3 : lead >= 0xF0 && lead < 0xF5 ? 4 : 0;
        if (size == 0 || i + size > raw.length) return 0;
        for (uint256 k = 1; k < size; k++) {
            if (uint8(raw[i + k]) & 0xC0 != 0x80) return 0;
        }
        uint8 second = uint8(raw[i + 1]);
        bool overlong = (lead == 0xE0 && second < 0xA0) || (lead == 0xF0 && second < 0x90);
        bool outOfRange = (lead == 0xED && second >= 0xA0) || (lead == 0xF4 && second >= 0x90);
        return overlong || outOfRange ? 0 : size;
    }

    /// A short identifier: a letter or digit, then up to 63 of letters, digits and . _ : -
    function isToken(string memory value) internal pure returns (bool) {
        bytes memory raw = bytes(value);
        if (raw.length == 0 || raw.length > 64) return false;
        for (uint256 i = 0; i < raw.length; i++) {
            bytes1 c = raw[i];
            bool alnum = (c >= "0" && c <= "9") || (c >= "A" && c <= "Z") || (c >= "a" && c <= "z");
            if (!alnum && (i == 0 || (c != "." && c != "_" && c != ":" && c != "-"))) return false;
        }
        return true;
    }

    function token(string memory value, string memory field) internal pure {
        if (!isToken(value)) revert BadField(field);
    }

    function tokens(string[] calldata values, bool unique, string memory field) internal pure {
        if (values.length > MAX_ITEMS) revert BadField(field);
        for (uint256 i = 0; i < values.length; i++) {
            if (!isToken(values[i])) revert BadField(field);
            for (uint256 j = 0; unique && j < i; j++) {
                if (keccak256(bytes(values[i])) == keccak256(bytes(values[j]))) revert BadField(field);
            }
        }
    }

    function distinct(bytes8[] calldata ids, string memory field) internal pure {
        if (ids.length > MAX_ITEMS) revert BadField(field);
        for (uint256 i = 0; i < ids.length; i++) {
            for (uint256 j = 0; j < i; j++) {
                if (ids[i] == ids[j]) revert BadField(field);
            }
        }
    }

    function contains(bytes8[] storage ids, bytes8 id) internal view returns (bool) {
        for (uint256 i = 0; i < ids.length; i++) {
            if (ids[i] == id) return true;
        }
        return false;
    }

    function containsText(string[] storage values, string storage value) internal view returns (bool) {
        bytes32 wanted = keccak256(bytes(value));
        for (uint256 i = 0; i < values.length; i++) {
            if (keccak256(bytes(values[i])) == wanted) return true;
        }
        return false;
    }
}
